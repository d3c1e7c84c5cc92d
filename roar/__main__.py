from roar.cli.app import main

main()
