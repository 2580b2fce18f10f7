"""What a run tells people: the text output, the run history, incident reports, the HTML page, hang
kinds, and the secret scrub. History, incident and scrub are listeners of the engine."""
