-- The runners sharing this database, each heard from at every refresh: they split
-- the connectors among those heard from within the ttl (connector_runner::schedule::owner).
CREATE TABLE connectord.runners (
    runner_id text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);

-- One round trip per refresh: this runner is alive; returns every live runner, sorted.
-- Runners silent for a day are forgotten. Not flushed at commit: a heartbeat lost in
-- a crash is repeated at the next refresh.
CREATE FUNCTION connectord.heartbeat(p_runner text, p_ttl_ms double precision)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO connectord.runners AS r (runner_id, seen_at) VALUES (p_runner, now())
    ON CONFLICT (runner_id) DO UPDATE SET seen_at = now();
    DELETE FROM connectord.runners WHERE seen_at < now() - interval '1 day';
    RETURN QUERY SELECT r.runner_id FROM connectord.runners r
        WHERE r.seen_at > now() - p_ttl_ms * interval '1 millisecond' OR r.runner_id = p_runner
        ORDER BY r.runner_id;
END $$;
