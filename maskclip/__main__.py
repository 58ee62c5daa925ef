"""`python -m maskclip fit|validate|test|predict ...`: the shared Lightning CLI; `python -m maskclip segment IMAGE...
--classes ...`: open-vocabulary panoptic segmentation of your own images (maskclip/segment.py)."""

import sys

from common.cli import main

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "segment":
        from maskclip.segment import main as segment

        sys.exit(segment(sys.argv[2:]))
    main()
