from coopctl.cli import main

main()
