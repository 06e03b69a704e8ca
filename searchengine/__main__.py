from searchengine.cli.main import entry

entry()
