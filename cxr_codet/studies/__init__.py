"""Studies: configs x seeds trained, evaluated and tabulated by one command (tools/run_study.py), and ablation
tables of given runs (tools/ablation_table.py).

spec: the study file; plan, processes, runner: planning and running its runs (one tools/train_net.py process
each); runs, statistics, table, markdown: evaluated runs to table numbers to markdown; study_table: a study's
table files; cli: the two command lines.
"""
