"""What to run: the grid file and options turned into RunSpecs (`grid`), recipes (`recipes`, `papers`), tuning studies'
names, spaces and rules (`studies`, `search_rules`), and `--plan`'s printout (`show`)."""
