-- A parked worker message can be sent back to the ingester (`prl dead-letters redrive`).
ALTER TABLE dead_letters ADD COLUMN redrives INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN redriven_at TIMESTAMPTZ;
