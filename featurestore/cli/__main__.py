"""`python -m featurestore.cli`: how supervisord starts each program."""

import sys

from featurestore.cli import main

sys.exit(main())
