"""Board profiles: detect a Raspberry Pi 4 / Pi 5 / other board and pick thread counts and the batch size for it
(detect.py: which board; profiles.py: its values; report.py: /readyz, /status and the log)."""

from daemon.board.detect import Board, detect_board
from daemon.board.profiles import BOARD_PROFILE_CHOICES, BoardChoice, Profile, choose_profile, profile_values

__all__ = ["BOARD_PROFILE_CHOICES", "Board", "BoardChoice", "Profile", "choose_profile", "detect_board",
           "profile_values"]
