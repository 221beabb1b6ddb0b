from notes_app.cli import main

raise SystemExit(main())
