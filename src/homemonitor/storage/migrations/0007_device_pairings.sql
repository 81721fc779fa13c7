-- Which gateway (home hub) may speak for a device, and when. A reading is stored only when
-- the gateway that published it was paired with its device at measured_at: a device moves
-- between homes, and a replaced hub takes over a home's devices, so pairings are
-- time-bounded like bindings. A device is paired with at most one gateway at any instant.
CREATE TABLE device_pairings (
    device_id  text NOT NULL REFERENCES devices (id),
    gateway_id text NOT NULL REFERENCES gateways (id),
    valid      tstzrange NOT NULL CHECK (NOT isempty(valid)),
    PRIMARY KEY (device_id, valid),
    EXCLUDE USING gist (device_id WITH =, valid WITH &&)
);
CREATE INDEX device_pairings_gateway ON device_pairings (gateway_id);
