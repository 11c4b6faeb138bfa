"""`grace results`: bring the campaign's files home, check them, reshape them for R, and draw them.

outputs.py      what one output file is: its companions (checkpoint, meta), its rows and their outcomes
campaign.py     the planned outputs of a stack (from the same planning code as the offline render)
check.py        `grace results check`: every planned output present and complete (offline, any folder)
tidy.py         the long-format probability table beside each Experiment 2 file
analysis.py     the researchers' tables: all models per study and experiment, and one row per item
statistics.py   the statistics of the researchers' R scripts on the item tables (scipy, statsmodels)
report.py       `grace results report`: the measures and statistics, models side by side (svg.py draws)
pull.py         `grace results pull`: copy the output claim through a reader pod's exec stream
subcommands.py  the `grace results` command line
"""
