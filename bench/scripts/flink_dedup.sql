-- Flink's side of the checkpoint-size comparison (docs/benchmarks.md): the same deduplication
-- as Weir's `dedup` example job, one state entry per distinct payment id, kept forever, on
-- Flink's RocksDB backend. Ids are random 62-bit numbers (as Weir's are scattered): all distinct,
-- but for a rare collision. bench/scripts/flink_checkpoints.py runs it with
-- ../shared/peers/flink/run_sql.py and reads each checkpoint's size and duration from Flink's REST API.
CREATE TABLE payments (
    id BIGINT,
    account BIGINT,
    amount_cents BIGINT,
    pt AS PROCTIME()
) WITH (
    'connector' = 'datagen',
    'number-of-rows' = '${EVENTS}',
    'rows-per-second' = '${RATE}',
    'fields.id.min' = '0',
    'fields.id.max' = '4611686018427387903',
    'fields.account.min' = '0',
    'fields.account.max' = '999999',
    'fields.amount_cents.min' = '1',
    'fields.amount_cents.max' = '100000'
);
CREATE TABLE unique_payments (
    id BIGINT,
    account BIGINT,
    amount_cents BIGINT
) WITH ('connector' = 'blackhole');
INSERT INTO unique_payments
SELECT id, account, amount_cents FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY pt ASC) AS row_num FROM payments
) WHERE row_num = 1;
