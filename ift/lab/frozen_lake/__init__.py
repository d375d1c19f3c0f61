"""The Frozen Lake comparison (``ift frozen-lake``) on top of the task :mod:`ift.tasks.frozen_lake`.

* ``monitor``: :class:`FrozenLakeMonitor`, the callback that evaluates the policy while it trains;
* ``plot``: policies as arrows on the map, learning curves;
* ``runs``: the ``ift fit`` config of each objective (``configs/frozen_lake/*.yaml``);
* ``results``: ``results.json``'s rows, the table and the picture of a comparison;
* ``claims``: the paper's claims and this project's checks, judged over seeds;
* ``map_check``: whether a map's rejected paths really are worse;
* ``command``: ``ift frozen-lake``.

In YAML the callback is named ``ift.lab.frozen_lake.FrozenLakeMonitor``.
"""

from ift.lab.frozen_lake.monitor import FrozenLakeMonitor
from ift.lab.frozen_lake.plot import plot_policies

__all__ = ["FrozenLakeMonitor", "plot_policies"]
