from partool.cli.app import main

main()
