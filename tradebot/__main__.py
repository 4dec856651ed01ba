from tradebot.cli import main

raise SystemExit(main())
