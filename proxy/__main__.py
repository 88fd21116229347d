import os
import sys

from proxy.app.cli import main

if os.environ.get("XP_SWITCH"):
    sys.setswitchinterval(float(os.environ["XP_SWITCH"]))
if os.environ.get("XP_PROFILE"):
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        rc = main()
    finally:
        prof.disable()
        prof.dump_stats(os.environ["XP_PROFILE"] + f".{os.getpid()}")
    sys.exit(rc)
sys.exit(main())
