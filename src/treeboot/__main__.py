import sys

from treeboot.cli.main import main

sys.exit(main())
