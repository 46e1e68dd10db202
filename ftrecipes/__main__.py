import sys

from ftrecipes.launch import main

sys.exit(main())
