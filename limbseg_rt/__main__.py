import sys

from limbseg_rt.cli import main

sys.exit(main())
