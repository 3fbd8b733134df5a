# Copyright (c) mmekd contributors. All rights reserved.
from .accuracy_flops import PlotSeries, plot_accuracy_vs_flops

__all__ = ['PlotSeries', 'plot_accuracy_vs_flops']
