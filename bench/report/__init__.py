"""Reporting from finished records: the records table (`frame`), statistics (`stats`), tables (`tables`, `sections`),
the leaderboard and its pages (`leaderboard`, `summary`), figures (`figures`), and the papers' stopping rules
replayed on stored curves (`selection`)."""
