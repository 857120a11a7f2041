import sys

from treeboot.cli import main

sys.exit(main())
