-- One number that changes whenever the registry does (homemonitor registry apply bumps it).
-- Workers compare it, cheaply, before reloading their cached copy of bindings and plans.
CREATE TABLE registry_revision (
    id       integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    revision bigint NOT NULL
);
INSERT INTO registry_revision (id, revision) VALUES (1, 1);
