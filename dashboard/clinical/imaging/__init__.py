"""The imaging checklist: rules as data, the table they are tested on, evaluation and the catalogue."""
