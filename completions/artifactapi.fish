# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_artifactapi_global_optspecs
    string join \n c/config= v/verbose q/quiet log-format= color= h/help V/version
end

function __fish_artifactapi_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_artifactapi_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_artifactapi_using_subcommand
    set -l cmd (__fish_artifactapi_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c artifactapi -n "__fish_artifactapi_needs_command" -s c -l config -d 'Configuration file' -r -F
complete -c artifactapi -n "__fish_artifactapi_needs_command" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c artifactapi -n "__fish_artifactapi_needs_command" -l color -d 'When to use colours and progress bars' -r -f -a "auto\t'Only when writing to a terminal'
always\t''
never\t''"
complete -c artifactapi -n "__fish_artifactapi_needs_command" -s v -l verbose -d 'More log output (-v debug, -vv trace). RUST_LOG overrides'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -s q -l quiet -d 'Less output: warnings and errors only, no progress bars'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -s V -l version -d 'Print version'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -f -a "serve" -d 'Run the HTTP proxy'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -f -a "fetch" -d 'Fetch one file (or a docker image) through the cache'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -f -a "flush" -d 'Remove cached content'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -f -a "warm" -d 'Pre-seed the cache from paths, images, rpm repodata, APKINDEX or GitHub releases'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -f -a "ls" -d 'List cached objects'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -f -a "validate-config" -d 'Check configuration files and report every problem as file:line:col'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -f -a "generate-assets" -d 'Write shell completions and man pages (for packaging; see README)'
complete -c artifactapi -n "__fish_artifactapi_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand serve" -l listen -d 'Address to listen on (overrides server.listen; default 127.0.0.1:8000)' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand serve" -s c -l config -d 'Configuration file' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand serve" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand serve" -l color -d 'When to use colours and progress bars' -r -f -a "auto\t'Only when writing to a terminal'
always\t''
never\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand serve" -s v -l verbose -d 'More log output (-v debug, -vv trace). RUST_LOG overrides'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand serve" -s q -l quiet -d 'Less output: warnings and errors only, no progress bars'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand serve" -s V -l version -d 'Print version'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -s o -l output -d 'Where to write the file (`-` for stdout); for docker, a directory for manifests and blobs. Without it, the content is only cached' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -l platform -d 'Docker: only this platform of a multi-platform image (os/arch[/variant])' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -s c -l config -d 'Configuration file' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -l color -d 'When to use colours and progress bars' -r -f -a "auto\t'Only when writing to a terminal'
always\t''
never\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -s v -l verbose -d 'More log output (-v debug, -vv trace). RUST_LOG overrides'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -s q -l quiet -d 'Less output: warnings and errors only, no progress bars'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand fetch" -s V -l version -d 'Print version'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -l remote -d 'Only this repository (default: every remote repository)' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -l type -d 'What to remove' -r -f -a "all\t''
index\t''
files\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -l unused-for -d 'Only objects not read for this long (`30d`, `12h`)' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -s c -l config -d 'Configuration file' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -l color -d 'When to use colours and progress bars' -r -f -a "auto\t'Only when writing to a terminal'
always\t''
never\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -s y -l yes -d 'Do not ask for confirmation'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -s v -l verbose -d 'More log output (-v debug, -vv trace). RUST_LOG overrides'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -s q -l quiet -d 'Less output: warnings and errors only, no progress bars'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand flush" -s V -l version -d 'Print version'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l from-file -d 'Read more paths from this file (one per line; `#` comments)' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -s j -l jobs -d 'Parallel downloads' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l image -d 'Docker: an image NAME:TAG (manifest, every platform, all blobs). Repeatable' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l platform -d 'Docker: only this platform (os/arch[/variant])' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l repodata -d 'rpm: a repository directory (holding repodata/); fetches every allowed package' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l apkindex -d 'alpine: a directory holding APKINDEX.tar.gz; fetches every allowed package' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l github-releases -d 'generic: OWNER/REPO whose release assets to fetch (through the GitHub REST API)' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l pattern -d 'With --github-releases: only assets whose name matches this regex' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -s c -l config -d 'Configuration file' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -l color -d 'When to use colours and progress bars' -r -f -a "auto\t'Only when writing to a terminal'
always\t''
never\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -s v -l verbose -d 'More log output (-v debug, -vv trace). RUST_LOG overrides'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -s q -l quiet -d 'Less output: warnings and errors only, no progress bars'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand warm" -s V -l version -d 'Print version'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -l prefix -d 'Only paths starting with this prefix (within the repository)' -r
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -l class -d 'Only this cache class' -r -f -a "index\t''
file\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -l sort -d 'Sort order' -r -f -a "path\t''
size\t''
age\t''
read\t'Least recently read first: what eviction would take next'"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -s c -l config -d 'Configuration file' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -l color -d 'When to use colours and progress bars' -r -f -a "auto\t'Only when writing to a terminal'
always\t''
never\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -l json -d 'JSON output for scripts'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -l summary -d 'Per repository: objects, bytes used and the limit, instead of one row per object'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -s v -l verbose -d 'More log output (-v debug, -vv trace). RUST_LOG overrides'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -s q -l quiet -d 'Less output: warnings and errors only, no progress bars'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand ls" -s V -l version -d 'Print version'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand validate-config" -s c -l config -d 'Configuration file' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand validate-config" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand validate-config" -l color -d 'When to use colours and progress bars' -r -f -a "auto\t'Only when writing to a terminal'
always\t''
never\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand validate-config" -s v -l verbose -d 'More log output (-v debug, -vv trace). RUST_LOG overrides'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand validate-config" -s q -l quiet -d 'Less output: warnings and errors only, no progress bars'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand validate-config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand validate-config" -s V -l version -d 'Print version'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -l completions -d 'Directory for completions (bash, zsh, fish)' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -l man -d 'Directory for man pages' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -s c -l config -d 'Configuration file' -r -F
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -l color -d 'When to use colours and progress bars' -r -f -a "auto\t'Only when writing to a terminal'
always\t''
never\t''"
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -s v -l verbose -d 'More log output (-v debug, -vv trace). RUST_LOG overrides'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -s q -l quiet -d 'Less output: warnings and errors only, no progress bars'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand generate-assets" -s V -l version -d 'Print version'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand help; and not __fish_seen_subcommand_from serve fetch flush warm ls validate-config generate-assets help" -f -a "serve" -d 'Run the HTTP proxy'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand help; and not __fish_seen_subcommand_from serve fetch flush warm ls validate-config generate-assets help" -f -a "fetch" -d 'Fetch one file (or a docker image) through the cache'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand help; and not __fish_seen_subcommand_from serve fetch flush warm ls validate-config generate-assets help" -f -a "flush" -d 'Remove cached content'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand help; and not __fish_seen_subcommand_from serve fetch flush warm ls validate-config generate-assets help" -f -a "warm" -d 'Pre-seed the cache from paths, images, rpm repodata, APKINDEX or GitHub releases'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand help; and not __fish_seen_subcommand_from serve fetch flush warm ls validate-config generate-assets help" -f -a "ls" -d 'List cached objects'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand help; and not __fish_seen_subcommand_from serve fetch flush warm ls validate-config generate-assets help" -f -a "validate-config" -d 'Check configuration files and report every problem as file:line:col'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand help; and not __fish_seen_subcommand_from serve fetch flush warm ls validate-config generate-assets help" -f -a "generate-assets" -d 'Write shell completions and man pages (for packaging; see README)'
complete -c artifactapi -n "__fish_artifactapi_using_subcommand help; and not __fish_seen_subcommand_from serve fetch flush warm ls validate-config generate-assets help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
