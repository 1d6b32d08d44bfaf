-- Reverts outbox V2.
DROP FUNCTION outbox.send_webhooks(text[], bytea[], text[]);
