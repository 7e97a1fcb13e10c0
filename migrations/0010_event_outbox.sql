-- Schema reconciler: the platform events applies announce (SPEC section 7). An apply
-- writes the event of each record change it makes here, in its own transaction, and
-- delivers them to the event bus after its commit; an event the bus did not take stays
-- here, undelivered, until the next apply or `reconciler events --deliver` sends it.
-- Each event keeps its id for good, so the bus may see it twice but never under two ids.
--
--   seq           the delivery order: apply order, and within an apply the plan's order
--   id            the envelope's id (uuid)
--   run_id        the apply that wrote it; the envelope's correlationId
--   type          metastore.record.created | updated | deleted
--   occurred_at   the envelope's occurredAt: when the apply's transaction made the change
--   payload       the payload the metastore publishes for the same operation
--   delivered_at  when the bus took it (null: pending)
--   attempts, last_attempt_at, last_error   how delivering it went so far
CREATE TABLE IF NOT EXISTS reconciler.event_outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    run_id text NOT NULL,
    type text NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload jsonb NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_attempt_at timestamptz,
    last_error text
);

CREATE INDEX IF NOT EXISTS event_outbox_pending ON reconciler.event_outbox (seq) WHERE delivered_at IS NULL;

-- Deliverers take turns: each holds a lock on this row (SELECT ... FOR UPDATE, which needs
-- UPDATE privilege on the table: the apply role's alone) while it sends a batch and marks
-- it delivered, so two never send events out of order.
INSERT INTO reconciler.apply_locks (name) VALUES ('event-outbox') ON CONFLICT (name) DO NOTHING;
