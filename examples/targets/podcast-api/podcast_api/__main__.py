from podcast_api.server import main

raise SystemExit(main())
