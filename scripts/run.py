"""`make run` entry point; the launcher lives in switchyard.devtools.run so the e2e harness shares it."""

from switchyard.devtools.run import main

if __name__ == "__main__":
    main()
