import sys

from vllm_rdna_w8a8.tune.run import main

sys.exit(main())
