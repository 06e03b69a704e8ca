from searchengine.cli import main

main()
