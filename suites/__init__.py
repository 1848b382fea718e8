"""dbdrill suites: ready-made drills, the history recorder, checkers and reports."""
