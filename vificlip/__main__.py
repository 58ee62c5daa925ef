"""`python -m vificlip fit|validate|test|predict ...`: the shared Lightning CLI; `python -m vificlip classify VIDEO...
--classes ...`: zero-shot classification of your own videos (vificlip/classify.py)."""

import sys

from common.cli import main

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "classify":
        from vificlip.classify import main as classify

        sys.exit(classify(sys.argv[2:]))
    main()
