"""curves.png draws the planned lr schedule beside the losses and mAP."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gluondet.engine.logging import _draw_lr, draw_curves  # noqa: E402
from gluondet.engine.schedule import epoch_learning_rates  # noqa: E402


def test_lr_panel_holds_the_schedule_and_the_recorded_lr(tmp_path):
    schedule = epoch_learning_rates(6, 0.1, lr_step_every=2, lr_decay=0.5)
    rows = [{"epoch": "1", "lr": "0.1"}, {"epoch": "2", "lr": "0.1"}, {"epoch": "3", "lr": "0.05"}]
    fig, ax = plt.subplots()
    _draw_lr(ax, rows, schedule)
    planned, recorded = ax.lines
    np.testing.assert_allclose(planned.get_xdata(), [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(planned.get_ydata(), [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    np.testing.assert_allclose(recorded.get_ydata(), [0.1, 0.1, 0.05])
    assert ax.get_yscale() == "log"
    plt.close(fig)
    draw_curves(rows, tmp_path / "curves.png", ["loss"], lr_schedule=schedule)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
