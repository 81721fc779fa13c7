"""The web app's words in Swedish (first) and English.

Each page module calls :func:`add` at import with its own keys; a template says
``{{ t("inbox.title") }}``, and ``{{ t("patient.days", n=14) }}`` for a text that counts
(keys ``patient.days.one`` and ``patient.days.other``: :func:`translator`). The language
is the ``hm_lang`` cookie (set by ``/lang/{code}``), else the first of ours in the
browser's Accept-Language, else Swedish. A key missing in a language falls back to
Swedish, then to the key itself (visible, so a test notices).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

#: The languages offered, the default first.
LANGUAGES = ("sv", "en")
DEFAULT = LANGUAGES[0]
#: The cookie that holds the chosen language.
LANG_COOKIE = "hm_lang"

_MESSAGES: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}


def add(messages: dict[str, dict[str, str]]) -> None:
    """Add texts: language → key → text (``{name}`` placeholders are filled by ``t``).

    >>> add({"sv": {"doc.hello": "Hej {name}"}, "en": {"doc.hello": "Hello {name}"}})
    >>> translator("en")("doc.hello", name="Anna")
    'Hello Anna'

    A key another module already gave another text is refused: two pages would show one
    word two ways, whichever module was imported last winning.
    """
    for lang, texts in messages.items():
        if lang not in _MESSAGES:
            msg = f"unknown language {lang!r}; the web app speaks {', '.join(LANGUAGES)}"
            raise ValueError(msg)
        clash = sorted(k for k, v in texts.items() if _MESSAGES[lang].get(k, v) != v)
        if clash:
            msg = f"texts already given otherwise ({lang}): {', '.join(clash)}"
            raise ValueError(msg)
        _MESSAGES[lang].update(texts)


def plural(n: object) -> str:
    """The plural category of a count in Swedish and English: ``one`` for 1, else ``other``.

    >>> [plural(n) for n in (0, 1, 2, 1.0, 1.5)]
    ['other', 'one', 'other', 'one', 'other']
    """
    return "one" if n == 1 else "other"


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)`` in ``lang``: Swedish where ``lang`` lacks the key, else the key.

    A text that counts is given as two keys, ``<key>.one`` and ``<key>.other``, and asked
    for as ``t(key, n=count)``: the count ``n`` chooses (:func:`plural`).

    >>> add({"sv": {"doc.n.one": "{n} mätning", "doc.n.other": "{n} mätningar"},
    ...      "en": {"doc.n.one": "{n} reading", "doc.n.other": "{n} readings"}})
    >>> t = translator("sv")
    >>> t("doc.n", n=1), t("doc.n", n=3), translator("en")("doc.n", n=1)
    ('1 mätning', '3 mätningar', '1 reading')
    """
    own = _MESSAGES.get(lang, _MESSAGES[DEFAULT])
    fallback = _MESSAGES[DEFAULT]

    def t(key: str, /, **values: object) -> str:
        if "n" in values and f"{key}.other" in fallback:
            key = f"{key}.{plural(values['n'])}"
        text = own.get(key) or fallback.get(key) or key
        return text.format(**values) if values else text

    return t


def language(request: Request) -> str:
    """The request's language: the cookie, else Accept-Language, else Swedish.

    >>> from starlette.requests import Request
    >>> def asking(header: str) -> Request:
    ...     return Request({"type": "http", "headers": [(b"accept-language", header.encode())]})
    >>> [language(asking(h)) for h in ("en-GB,en;q=0.9,sv;q=0.8", "de, fr", "sv-SE", "de,en")]
    ['en', 'sv', 'sv', 'en']
    """
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        base = tag.split("-")[0].lower()
        if base in LANGUAGES and quality > 0:
            ranked.append((-quality, i, base))
    return min(ranked)[2] if ranked else DEFAULT


add(
    {
        "sv": {
            "app.name": "Hemmonitorering",
            "nav.skip": "Hoppa till innehållet",
            "nav.main": "Huvudmeny",
            "nav.inbox": "Inkorg",
            "nav.patients": "Mina patienter",
            "nav.follow_up": "Uppföljning",
            "nav.access_review": "Åtkomstlogg",
            "nav.language": "Språk",
            "nav.signed_in_as": "Inloggad som {name}",
            "nav.logout": "Logga ut",
            "login.title": "Logga in",
            "login.sso": "Logga in med e-tjänstekort (SITHS)",
            "login.sso_help": "Du skickas till regionens inloggning och tillbaka hit.",
            "login.demo_title": "Demoinloggning",
            "login.demo_warning": (
                "Endast för demo: ingen identitet kontrolleras. Välj vem du vill vara. "
                "Finns inte när inloggning via regionens identitetstjänst är konfigurerad."
            ),
            "login.demo_who": "Logga in som",
            "login.demo_submit": "Logga in (demo)",
            "login.none": (
                "Ingen inloggning är konfigurerad. Sätt HOMEMONITOR_OIDC_ISSUER m.fl. "
                "(se docs/web.md), eller kör 'homemonitor demo'."
            ),
            "login.failed": "Inloggningen misslyckades. Försök igen.",
            "login.unknown_person": (
                "Inloggningen lyckades, men ditt HSA-id finns inte bland teamens "
                "vårdpersonal i registret. Kontakta din administratör."
            ),
            "login.ended": "Du är utloggad.",
            "error.csrf": "Formuläret hade gått ut. Ladda om sidan och försök igen.",
        },
        "en": {
            "app.name": "Home monitoring",
            "nav.skip": "Skip to content",
            "nav.main": "Main menu",
            "nav.inbox": "Inbox",
            "nav.patients": "My patients",
            "nav.follow_up": "Follow-up",
            "nav.access_review": "Access log",
            "nav.language": "Language",
            "nav.signed_in_as": "Signed in as {name}",
            "nav.logout": "Sign out",
            "login.title": "Sign in",
            "login.sso": "Sign in with your SITHS card",
            "login.sso_help": "You are sent to the region's sign-in and back here.",
            "login.demo_title": "Demo sign-in",
            "login.demo_warning": (
                "Demo only: nobody's identity is checked. Choose who you want to be. "
                "Not offered when sign-in through the region's identity provider is set up."
            ),
            "login.demo_who": "Sign in as",
            "login.demo_submit": "Sign in (demo)",
            "login.none": (
                "No sign-in is configured. Set HOMEMONITOR_OIDC_ISSUER and the rest "
                "(see docs/web.md), or run 'homemonitor demo'."
            ),
            "login.failed": "Sign-in failed. Please try again.",
            "login.unknown_person": (
                "You signed in, but your HSA id is not among the care teams' clinicians in "
                "the registry. Contact your administrator."
            ),
            "login.ended": "You are signed out.",
            "error.csrf": "The form had expired. Reload the page and try again.",
        },
    }
)
