"""The paper's reported numbers (Xia et al., TOIS 2022), for tables that put ours beside them.

These are the paper's figures, copied from its text, never ours: ours come from run records only.
Its "Prec@K" is the hit rate (HR@K). Its accuracy was selected on the test set and its students
were scored with a table mixed with the teacher's, so they are reference points, not targets a
deployed model is known to reach.
"""

from __future__ import annotations

# Table 3: (HR@5, NDCG@5, HR@10, NDCG@10) per model and dataset.
TABLE3_METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")
TABLE3: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "GRU4Rec": {"tmall": (16.48, 9.25, 19.58, 9.93), "retailrocket": (32.37, 19.36, 39.35, 20.53)},
    "NARM": {"tmall": (16.84, 10.96, 19.68, 11.66), "retailrocket": (32.94, 20.07, 39.18, 21.53)},
    "STAMP": {"tmall": (17.45, 12.92, 22.61, 13.34), "retailrocket": (33.57, 20.50, 39.75, 22.97)},
    "SR-GNN": {"tmall": (19.39, 14.29, 23.79, 15.81), "retailrocket": (35.68, 27.19, 43.31, 29.67)},
    "Teacher": {"tmall": (22.47, 18.05, 27.86, 19.53), "retailrocket": (36.51, 27.77, 43.59, 30.03)},
    "OD-Rec": {"tmall": (23.68, 18.86, 25.22, 19.43), "retailrocket": (35.17, 28.45, 36.81, 28.93)},
    "Student": {"tmall": (23.66, 18.49, 27.76, 19.67), "retailrocket": (37.72, 28.60, 44.55, 30.83)},
}

# The student's codebook shape in Table 3 (compression ratio about 30 on both datasets).
STUDENT_CODES: dict[str, tuple[int, int]] = {"tmall": (4, 32), "retailrocket": (3, 256)}
# "OD-Rec and the student ... compressed to the same degree (compression ratio is 30)".
TABLE3_RATIO = 30.0

# Table 4: (M, K) -> (Eq. 11 ratio, HR@5, NDCG@5, HR@10, NDCG@10) per dataset.
TABLE4: dict[str, dict[tuple[int, int], tuple[float, float, float, float, float]]] = {
    "tmall": {
        (1, 32): (116, 21.10, 15.58, 25.48, 17.01), (1, 128): (91, 22.01, 15.48, 26.22, 17.87),
        (1, 256): (71, 22.77, 17.13, 27.02, 18.16), (1, 512): (49, 23.10, 17.76, 27.38, 18.22),
        (2, 32): (58, 23.01, 17.58, 27.37, 19.00), (2, 128): (46, 23.18, 17.63, 27.57, 19.05),
        (2, 256): (35, 23.21, 17.80, 27.53, 19.12), (2, 512): (24, 23.45, 18.65, 27.92, 19.79),
        (3, 32): (39, 23.05, 17.67, 27.36, 19.07), (3, 128): (30, 23.44, 18.43, 27.42, 19.66),
        (3, 256): (24, 23.75, 18.63, 27.66, 19.75), (3, 512): (16, 23.82, 18.89, 28.00, 19.84),
        (4, 32): (29, 23.66, 18.49, 27.76, 19.67), (4, 128): (23, 23.88, 18.45, 27.33, 19.30),
        (4, 256): (18, 23.82, 18.50, 27.86, 19.98), (4, 512): (12, 23.89, 18.61, 28.04, 19.64),
        (5, 32): (23, 23.57, 18.42, 27.49, 19.07), (5, 128): (18, 23.67, 18.51, 27.41, 18.95),
        (5, 256): (14, 23.88, 18.67, 27.44, 19.06), (5, 512): (10, 23.81, 18.89, 28.13, 19.70),
    },
    "retailrocket": {
        (1, 32): (210, 33.09, 24.41, 40.01, 26.65), (1, 128): (135, 34.98, 24.60, 41.67, 27.76),
        (1, 256): (92, 35.09, 26.46, 42.74, 27.61), (1, 512): (56, 36.11, 26.39, 42.28, 28.72),
        (2, 32): (105, 34.09, 24.47, 41.14, 27.76), (2, 128): (68, 36.04, 26.60, 41.76, 28.78),
        (2, 256): (46, 36.10, 26.41, 41.32, 28.65), (2, 512): (28, 36.86, 27.40, 43.45, 30.66),
        (3, 32): (70, 36.08, 26.62, 41.70, 27.73), (3, 128): (45, 37.08, 27.72, 43.47, 30.79),
        (3, 256): (31, 37.72, 28.60, 44.55, 30.83), (3, 512): (19, 37.65, 28.98, 44.37, 30.96),
        (4, 32): (52, 36.19, 26.67, 42.14, 28.69), (4, 128): (34, 37.02, 28.37, 44.25, 30.70),
        (4, 256): (23, 37.53, 28.44, 44.30, 30.79), (4, 512): (14, 37.99, 28.83, 44.75, 31.01),
        (5, 32): (42, 36.75, 28.51, 42.74, 30.45), (5, 128): (27, 37.16, 28.38, 44.23, 30.67),
        (5, 256): (18, 37.77, 28.88, 44.76, 30.99), (5, 512): (11, 37.99, 28.97, 44.66, 30.78),
    },
}

# Fig. 3 is a bar chart; its text gives only the full student's relative gain over Stu-base.
FIG3_GAIN_PERCENT: dict[str, dict[str, float]] = {
    "tmall": {"HR@10": 10.55, "NDCG@10": 10.20},
    "retailrocket": {"HR@10": 8.29, "NDCG@10": 10.90},
}

# Fig. 6: the range of items per codeword of its M=4, K=32 students.
FIG6_USAGE_RANGE: dict[str, tuple[int, int]] = {"tmall": (1090, 1480),
                                                "retailrocket": (997, 1312)}
FIG6_CODES = (4, 32)

# Table 5: seconds per 100 sessions on a (virtual) Pixel 2 with PyTorch Mobile.
TABLE5_SECONDS: dict[str, dict[str, float]] = {
    "GRU4Rec": {"tmall": 0.417, "retailrocket": 0.093},
    "NARM": {"tmall": 0.264, "retailrocket": 0.096},
    "STAMP": {"tmall": 0.175, "retailrocket": 0.094},
    "SR-GNN": {"tmall": 0.310, "retailrocket": 0.192},
    "OD-Rec": {"tmall": 0.169, "retailrocket": 0.081},
    "New Student": {"tmall": 0.021, "retailrocket": 0.012},
}
