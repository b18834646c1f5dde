"""The citations that the norm-based measures and the rank statistics carry in their results."""

JIANG_REFERENCE = (
    "Jiang, Neyshabur, Mobahi, Krishnan & Bengio, 'Fantastic Generalization Measures and Where "
    "to Find Them', ICLR 2020, arXiv:1912.02178"
)
NEYSHABUR_2015_REFERENCE = (
    "Neyshabur, Tomioka & Srebro, 'Norm-Based Capacity Control in Neural Networks', COLT 2015, "
    "arXiv:1503.00036"
)
