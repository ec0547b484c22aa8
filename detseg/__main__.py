from detseg.cli import main

raise SystemExit(main())
