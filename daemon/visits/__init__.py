"""Visits: who may see which conversations on a public kiosk, and what is kept of them.

A visit is one visitor's time at the screen: it starts when a kiosk WebSocket opens and ends at "New customer"
(`new_visit`), at the idle reset, or when the connection closes. Each visit has an opaque random token, handed
to its screen in `hello`; the screen may list, read and delete only the conversations created in its visit.
The operator (API token from another machine, or an operator PIN unlock on the screen) sees the whole archive.
`history_mode` decides what happens to a visit's conversations when it ends (see `VisitKeeper`).
"""

from daemon.visits.keeper import VisitKeeper
from daemon.visits.operator import OperatorAccess, OperatorRefusal, Unlocked

__all__ = ["OperatorAccess", "OperatorRefusal", "Unlocked", "VisitKeeper"]
