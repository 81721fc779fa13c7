// A real OpenID provider for the tests: panva's oidc-provider (OpenID Certified), with its
// development sign-in pages (any login, any password; the login is the account id).
// Started by tests/conftest.py (fixture oidc_provider) as: node provider.mjs <config.json>
// config: {port, client_id, client_secret, redirect_uri, post_logout_redirect_uri,
//          accounts: {login: {claim: value, ...}}}
// Prints "listening <issuer>" once it accepts connections.
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const issuer = `http://localhost:${config.port}`;

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: "test-" + randomBytes(4).toString("hex"), alg: "RS256", use: "sig" };
const claimNames = [...new Set(Object.values(config.accounts).flatMap((c) => Object.keys(c)))];

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: [config.redirect_uri],
      post_logout_redirect_uris: [config.post_logout_redirect_uri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString("hex")] },
  // The claims the region's IdP would release with openid (an HSA id among them).
  claims: { openid: ["sub", ...claimNames] },
  features: { claimsParameter: { enabled: true }, rpInitiatedLogout: { enabled: true }, devInteractions: { enabled: true } },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    const claims = config.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
provider.proxy = false;

const server = provider.listen(config.port, "127.0.0.1", () => {
  console.log(`listening ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
