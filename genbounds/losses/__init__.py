"""Margins and the losses built from them (0-1, margin, ramp), and the choice of a margin.

`margins(logits, y)` is the multiclass margin f(x)_y - max_{j != y} f(x)_j of Bartlett et al.
(2017); margin bounds take their empirical loss from `ramp_loss` or `margin_loss` at a margin chosen
by `select_margin` (a quantile of the training margins, with the union bound it needs).
"""

from ._margins import SelectedMargin as SelectedMargin
from ._margins import margin_loss as margin_loss
from ._margins import margin_quantile as margin_quantile
from ._margins import margins as margins
from ._margins import ramp_loss as ramp_loss
from ._margins import select_margin as select_margin
