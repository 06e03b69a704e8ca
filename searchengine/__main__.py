from searchengine.cli.main import main

main()
