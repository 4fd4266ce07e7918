import sys

from pixelvla_ros.ur_emulator.cli import main

sys.exit(main())
