-- Schema version 3: a response longer than the stored cap (pipeline/store/writer.py
-- MAX_TEXT_CHARS) keeps its first part in response_text and is flagged here.
ALTER TABLE responses ADD COLUMN truncated BOOLEAN;
