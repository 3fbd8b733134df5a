# Copyright (c) mmekd contributors. All rights reserved.
"""Accuracy against FLOPs as a PNG that reads as a picture: an accuracy
axis that spans the data (not 0-100 %, where every difference disappears)
and labels that never cover each other or a point."""
from typing import Dict, List, NamedTuple, Sequence, Tuple


class PlotSeries(NamedTuple):
    """One group of points.

    Args:
        name (str): Legend entry.
        points (list[tuple[float, float, str]]): ``(flops, accuracy, label)``
            per point.
        marker (str): Matplotlib marker. Defaults to ``'o'``.
        line (bool): Join the points (in FLOPs order). Defaults to True.
        filled (bool): Filled markers; hollow ones show a point of another
            series at the same place. Defaults to True.
    """
    name: str
    points: Sequence[Tuple[float, float, str]]
    marker: str = 'o'
    line: bool = True
    filled: bool = True


def accuracy_limits(values: Sequence[float],
                    min_span: float = 1.0) -> Tuple[float, float]:
    """Limits of an accuracy axis (percent) that show the differences of
    ``values``: their range plus a quarter of it on each side, at least
    ``min_span`` points in all, inside 0-100.

    Example::

        >>> accuracy_limits([99.15, 99.15, 99.15])
        (98.65, 99.65)
        >>> accuracy_limits([70.75, 71.79])
        (70.49, 72.05)
    """
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.25, (min_span - (hi - lo)) / 2, 0.0)
    lo, hi = max(0.0, lo - pad), min(100.0, hi + pad)
    return round(lo, 2), round(hi, 2)


def _overlaps(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0
                or b.y1 <= a.y0)


# Label offsets from the point, in typographic points: beside it first,
# then further above and below, then on the left.
_OFFSETS = [(dx, dy) for dy in (0, 10, -10, 20, -20, 30, -30, 40, -40, 55,
                                -55, 70, -70)
            for dx in (8, -8)]


def _line_boxes(ax, series_points, step: float = 4.0) -> List:
    """Small boxes along the lines that join each series' points, so that
    no label is written over a line."""
    from matplotlib.transforms import Bbox
    boxes = []
    for pts in series_points:
        xy = [ax.transData.transform(p) for p in sorted(pts)]
        for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
            n = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) / step))
            for i in range(n + 1):
                x, y = x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n
                boxes.append(Bbox.from_extents(x - 1, y - 1, x + 1, y + 1))
    return boxes


def _place_labels(ax, points, renderer, obstacles=()) -> List:
    """Annotate every ``(x, y, text)`` at the first offset whose text box is
    inside the axes and clear of the other labels, of every point and of
    ``obstacles`` (boxes: the legend's, the lines'); returns the labels'
    text boxes (display coordinates)."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox
    marker = 5.0  # half the side of a point's box, in pixels
    dots = [ax.transData.transform((x, y)) for x, y, _ in points]
    taken = [Bbox.from_extents(px - marker, py - marker, px + marker,
                               py + marker) for px, py in dots]
    taken += list(obstacles)
    inside = ax.get_window_extent(renderer)
    boxes = []
    for x, y, text in points:
        for dx, dy in _OFFSETS:
            label = ax.annotate(
                text, (x, y), textcoords='offset points',
                xytext=(dx, dy), fontsize=7,
                ha='left' if dx > 0 else 'right', va='center')
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)  # text, no arrow
            free = (inside.x0 <= box.x0 and box.x1 <= inside.x1
                    and inside.y0 <= box.y0 and box.y1 <= inside.y1
                    and not any(_overlaps(box, t) for t in taken))
            if free or (dx, dy) == _OFFSETS[-1]:
                break
            label.remove()
        if dy:  # away from its point: a thin line leads to it
            label.remove()
            ax.annotate(text, (x, y), textcoords='offset points',
                        xytext=(dx, dy), fontsize=7,
                        ha='left' if dx > 0 else 'right', va='center',
                        arrowprops=dict(arrowstyle='-', lw=0.5, color='0.5',
                                        shrinkA=0, shrinkB=4))
        taken.append(box)
        boxes.append(box)
    return boxes


def plot_accuracy_vs_flops(series: Sequence[PlotSeries],
                           path: str,
                           title: str = '',
                           ylabel: str = 'top-1 accuracy (%)'
                           ) -> Dict[str, object]:
    """Write accuracy (y) against FLOPs per image (x) as a PNG.

    The FLOPs axis is in GFLOPs, or MFLOPs below 0.1 G; the accuracy axis
    spans the data (:func:`accuracy_limits`), and its label says so. Each
    point carries its label; labels are placed where they cover no other
    label and no point.

    Args:
        series (list[PlotSeries]): The groups of points (e.g. the nets of
            a DDNN, and the same nets trained alone).
        path (str): The PNG to write.
        title (str): Figure title.
        ylabel (str): Accuracy axis label.

    Returns:
        dict: ``ylim`` (the accuracy axis limits) and ``label_boxes`` (the
        labels' boxes in pixels, for checks).

    Example::

        plot_accuracy_vs_flops([
            PlotSeries('DDNN', [(1.16e9, 71.31, 'full: 71.31'),
                                (0.56e9, 71.53, 'sub0: 71.53')]),
            PlotSeries('alone', [(1.16e9, 71.79, 'resnet34: 71.79')],
                       marker='s', line=False, filled=False)], 'costs.png')
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pts = [p for s in series for p in s.points]
    if not pts:
        raise ValueError('nothing to plot: no point has an accuracy')
    unit, scale = ('G', 1e9) if max(p[0] for p in pts) >= 1e8 else ('M',
                                                                      1e6)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for i, s in enumerate(series):
        ordered = sorted(s.points)
        ax.plot([p[0] / scale for p in ordered], [p[1] for p in ordered],
                linestyle='-' if s.line else 'none', marker=s.marker,
                color=f'C{i}', label=s.name, markersize=6 if s.filled else 9,
                markerfacecolor=None if s.filled else 'none',
                markeredgewidth=1.0 if s.filled else 1.5)
    lo, hi = accuracy_limits([p[1] for p in pts])
    ax.set_ylim(lo, hi)
    x = [p[0] / scale for p in pts]
    span = (max(x) - min(x)) or max(x) or 1.0
    ax.set_xlim(max(0.0, min(x) - 0.35 * span), max(x) + 0.6 * span)
    ax.set_xlabel(f'FLOPs per image ({unit})')
    ax.set_ylabel(f'{ylabel}, axis {lo:g}-{hi:g}')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=7, loc='lower right') if len(
        series) > 1 else None
    fig.tight_layout()  # the layout is fixed before the labels are placed
    renderer = fig.canvas.get_renderer()
    obstacles = _line_boxes(ax, [[(p[0] / scale, p[1]) for p in s.points]
                                 for s in series if s.line])
    if legend is not None:
        obstacles.append(legend.get_window_extent(renderer))
    boxes = _place_labels(
        ax, [(p[0] / scale, p[1], p[2]) for p in pts], renderer, obstacles)
    fig.savefig(path)
    plt.close(fig)
    return dict(ylim=(lo, hi), label_boxes=boxes)
