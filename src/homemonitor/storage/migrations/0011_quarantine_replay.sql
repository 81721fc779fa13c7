-- Quarantine you can work with: a quarantined message can be replayed through the whole
-- pipeline once its cause is fixed (a device registered late, a pairing corrected). The
-- row stays, as the record of what arrived, and says when it was replayed, by whom, and
-- what became of it: 'stored' (its reading is in readings now, once) or the reason it is
-- still refused.
ALTER TABLE quarantine
    ADD COLUMN replayed_at    timestamptz,
    ADD COLUMN replayed_by    text,
    ADD COLUMN replay_outcome text,
    ADD COLUMN replay_count   integer NOT NULL DEFAULT 0;
CREATE INDEX quarantine_gateway_time ON quarantine (gateway_id, received_at DESC);
CREATE INDEX quarantine_time ON quarantine (received_at DESC);
