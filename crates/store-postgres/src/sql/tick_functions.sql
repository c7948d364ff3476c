-- A tick costs four round trips: claim_bucket, reserve_rows, the commit's one
-- statement (sink.rs), end_tick. Each function runs as one statement in its own
-- transaction, so a round trip is also a transaction.

-- The claim. Mirrors connector_runner::protocol::may_claim: a bucket is free when it
-- has no lease, or its lease is not done and not live with another runner. The
-- store-contract suite holds both stores to it. Committed synchronously: a fencing
-- token handed out must never be handed out again after a database crash.
CREATE OR REPLACE FUNCTION connectord.claim_bucket(
    p_connector text, p_bucket bigint, p_runner text, p_lease_ms double precision)
RETURNS TABLE (token bigint, expires_at_ms bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    held connectord.leases%ROWTYPE;
    taken bigint;
BEGIN
    INSERT INTO connectord.leases (connector_id, scheduled_for_ms, runner_id, token, expires_at)
    VALUES (p_connector, p_bucket, '', 0, '-infinity') ON CONFLICT DO NOTHING;
    -- SKIP LOCKED: a runner racing for the same bucket sees no row and moves on.
    SELECT * INTO held FROM connectord.leases l
    WHERE l.connector_id = p_connector AND l.scheduled_for_ms = p_bucket
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR held.done OR (held.expires_at > now() AND held.runner_id <> p_runner) THEN
        RETURN;
    END IF;
    INSERT INTO connectord.fencing AS f (connector_id, last_token) VALUES (p_connector, 1)
    ON CONFLICT (connector_id) DO UPDATE SET last_token = f.last_token + 1
    RETURNING f.last_token INTO taken;
    UPDATE connectord.leases l SET runner_id = p_runner, token = taken,
        expires_at = now() + p_lease_ms * interval '1 millisecond'
    WHERE l.connector_id = p_connector AND l.scheduled_for_ms = p_bucket
    RETURNING taken, (extract(epoch FROM l.expires_at) * 1000)::bigint
    INTO token, expires_at_ms;
    RETURN NEXT;
END $$;

-- Row positions for a commit, reserved in a transaction of their own so commits never
-- wait on each other's flush. Not flushed at commit: the WAL is written in order, so
-- the synchronous commit that uses these positions makes the reservation durable too,
-- and a reservation lost in a crash was used by nothing that survived it.
CREATE OR REPLACE FUNCTION connectord.reserve_rows(p_rows bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    first bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE connectord.row_positions SET next = next + p_rows RETURNING next - p_rows INTO first;
    RETURN first;
END $$;

-- A committed bucket: done, so nobody claims it again; the connector's leases older
-- than p_leases_before go. Not flushed at commit: the ledger row, not this flag,
-- keeps a bucket from committing twice.
CREATE OR REPLACE FUNCTION connectord.finish_bucket(
    p_connector text, p_bucket bigint, p_token bigint, p_leases_before bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE connectord.leases SET done = true
    WHERE connector_id = p_connector AND scheduled_for_ms = p_bucket AND token = p_token;
    DELETE FROM connectord.leases
    WHERE connector_id = p_connector AND scheduled_for_ms < p_leases_before;
END $$;

-- How a tick ended: the bucket done (p_done_token, when it committed), the
-- connector's status ('succeeded', 'failed', 'disabled' or NULL to leave it), its
-- newest tick, and the history line, trimmed to p_ticks_kept. False when the
-- connector no longer exists (nothing is written then). Not flushed at commit: none
-- of it guards a bucket (the ledger row does), and a crash loses at most the last
-- moments of history.
CREATE OR REPLACE FUNCTION connectord.end_tick(
    p_connector text, p_bucket bigint, p_done_token bigint, p_leases_before bigint,
    p_status text, p_message text, p_summary text,
    p_started_at_ms bigint, p_outcome text, p_rows bigint, p_source_bytes bigint,
    p_sink_bytes bigint, p_duration_ms bigint, p_error text, p_runner text,
    p_ticks_kept bigint)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE connectord.connectors SET
        last_tick = p_summary,
        last_error = CASE WHEN p_status IS NULL THEN last_error
                          WHEN p_status = 'succeeded' THEN NULL ELSE p_message END,
        state = CASE WHEN p_status = 'disabled' THEN 'disabled' ELSE state END,
        disabled_reason = CASE WHEN p_status = 'disabled' THEN p_message ELSE disabled_reason END
    WHERE id = p_connector;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_done_token IS NOT NULL THEN
        PERFORM connectord.finish_bucket(p_connector, p_bucket, p_done_token, p_leases_before);
    END IF;
    INSERT INTO connectord.ticks (connector_id, scheduled_for_ms, started_at_ms, outcome, rows,
        source_bytes, sink_bytes, duration_ms, error, runner_id)
    VALUES (p_connector, p_bucket, p_started_at_ms, p_outcome, p_rows, p_source_bytes,
        p_sink_bytes, p_duration_ms, p_error, p_runner);
    DELETE FROM connectord.ticks WHERE connector_id = p_connector AND id <=
        (SELECT id FROM connectord.ticks WHERE connector_id = p_connector
         ORDER BY id DESC LIMIT 1 OFFSET p_ticks_kept);
    RETURN true;
END $$;
