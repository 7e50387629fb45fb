from retrieval_server.cli import main

main()
