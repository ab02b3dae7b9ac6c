-- Schema version 6: each distinct request conversation is stored once, content-addressed, and
-- responses refer to it (a response row used to repeat its whole ~1,300-token conversation:
-- 2.7 KB of database per job). A prompt extends its parent: the final request of a job is
-- stored as the opening it shares with its cell (parent) plus the messages after it. Its id
-- is the md5 of the whole conversation's JSON, however it is split. `prompt_messages` (views.sql)
-- gives every prompt's whole message list again.
CREATE TABLE prompts (
    prompt_id  VARCHAR,    -- md5 of the whole conversation (JSON); unique, kept by the writer
    parent_id  VARCHAR,    -- the prompt this one extends; NULL: the messages are the whole conversation
    messages   JSON        -- the messages after the parent's
);
ALTER TABLE responses ADD COLUMN prompt_id VARCHAR;
UPDATE responses SET prompt_id = md5(request_messages::VARCHAR) WHERE request_messages IS NOT NULL;
INSERT INTO prompts
SELECT prompt_id, NULL, any_value(request_messages) FROM responses WHERE prompt_id IS NOT NULL GROUP BY prompt_id;
ALTER TABLE responses DROP COLUMN request_messages;
