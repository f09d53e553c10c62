"""Runs end to end: configs, training, distillation, the teacher and Stu-base hand-offs."""
