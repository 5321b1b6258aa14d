from fp4mm.cli import main

raise SystemExit(main())
