"""Joining or starting Ray for the pipelines and the trainers alike: connect with one-line
errors (`connect`), keep Ray's console noise to what a user can act on (`console`), and leave no
Ray process behind a killed driver (`reaper`). Depends on ray (and psutil) only."""
