from roar.app import main

main()
