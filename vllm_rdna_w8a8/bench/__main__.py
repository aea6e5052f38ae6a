import sys

from vllm_rdna_w8a8.bench.run import main

sys.exit(main())
