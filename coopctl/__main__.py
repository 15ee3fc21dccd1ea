from coopctl.start import main

main()
